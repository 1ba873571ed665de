select
    merchant_id,
    assessed_at,
    recorded_at,
    risk_score,
    chargeback_rate,
    fraud_reports
from {{ source('raw', 'merchant_risk_assessments') }}
