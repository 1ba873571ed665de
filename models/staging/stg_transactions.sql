select
    transaction_id,
    customer_id,
    merchant_id,
    amount,
    currency,
    channel,
    transaction_ts,
    cast(transaction_ts as date) as transaction_date,
    is_fraud
from {{ source('raw', 'transactions') }}
