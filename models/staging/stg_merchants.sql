select
    cast(merchant_id as bigint) as merchant_id,
    merchant_name,
    category,
    country
from {{ source('raw', 'merchants') }}
