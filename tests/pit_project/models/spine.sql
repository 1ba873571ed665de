select * from {{ source('pit', 'spine_rows') }}
