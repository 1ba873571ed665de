{#- A labelled training set for the fraud model: every card transaction with the features
    as they were known at authorisation time (never later). -#}
select *
from (
    {{ feature_store.point_in_time_join(
        spine=ref('stg_transactions'),
        features=[
            'customer_spend:amount_sum_7d', 'customer_spend:amount_avg_7d', 'customer_spend:txn_count_30d',
            'customer_spend:amount_max_30d', 'customer_spend:online_share_30d',
            'merchant_risk:risk_score', 'merchant_risk:chargeback_rate', 'merchant_risk:risk_tier',
            'customer_merchant_activity:pair_txn_count_30d', 'customer_merchant_activity:pair_active_days',
        ],
        timestamp='transaction_ts',
    ) }}
) as training_set
