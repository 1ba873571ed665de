select * from {{ source('pit', 'created_rows') }}
