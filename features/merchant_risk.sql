{#- Merchant risk as assessed each week. A late correction re-states an earlier
    assessed_at with a later recorded_at: the created timestamp decides which row wins. -#}
select
    merchant_id,
    assessed_at,
    recorded_at,
    risk_score,
    chargeback_rate,
    fraud_reports as fraud_reports_7d,
    case
        when risk_score >= 0.3 then 'high'
        when risk_score >= 0.1 then 'medium'
        else 'low'
    end as risk_tier
from {{ ref('stg_merchant_risk_assessments') }}
