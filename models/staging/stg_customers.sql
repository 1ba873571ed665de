select
    cast(customer_id as bigint) as customer_id,
    country,
    segment,
    birth_year,
    signed_up_at
from {{ source('raw', 'customers') }}
