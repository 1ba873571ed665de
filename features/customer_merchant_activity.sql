{#- How a customer uses a merchant: a pair view keyed by two entities. -#}
{{ config(
    options={'partition_by': 'event_month', 'overwrite': true},
) }}

with daily as (
    select
        customer_id,
        merchant_id,
        transaction_date as activity_date,
        count(*) as txn_count,
        sum(amount) as amount_sum
    from {{ ref('stg_transactions') }}
    group by customer_id, merchant_id, transaction_date
)

select
    customer_id,
    merchant_id,
    {{ day_end('activity_date') }} as event_timestamp,
    {{ month_start('activity_date') }} as event_month,
    cast(sum(txn_count) over w30 as bigint) as pair_txn_count_30d,
    sum(amount_sum) over w30 as pair_amount_sum_30d,
    cast(count(*) over (partition by customer_id, merchant_id order by activity_date
                        rows between unbounded preceding and current row) as bigint) as pair_active_days
from daily
window w30 as (
    partition by customer_id, merchant_id
    order by {{ day_number('activity_date') }}
    range between 29 preceding and current row
)
