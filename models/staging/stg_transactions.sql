select
    transaction_id,
    customer_id,
    merchant_id,
    amount,
    currency,
    channel,
    transaction_ts,
    {{ utc_date('transaction_ts') }} as transaction_date,  -- the UTC day, in any session zone
    is_fraud
from {{ source('raw', 'transactions') }}
