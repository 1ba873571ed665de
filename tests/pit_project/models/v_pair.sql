select * from {{ source('pit', 'pair_rows') }}
