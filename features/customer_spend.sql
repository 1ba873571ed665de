{#- Per-customer spend over rolling 1/7/30-day windows, one row per customer and active day.
    A day's values become known at midnight after it (event_timestamp), never earlier. -#}
{{ config(
    options={'partition_by': 'event_month', 'overwrite': true},
) }}

with daily as (
    select
        customer_id,
        transaction_date as activity_date,
        count(*) as txn_count,
        sum(amount) as amount_sum,
        max(amount) as amount_max,
        sum(case when channel = 'online' then 1 else 0 end) as online_count
    from {{ ref('stg_transactions') }}
    group by customer_id, transaction_date
),

windowed as (
    select
        customer_id,
        activity_date,
        txn_count,
        amount_sum,
        sum(txn_count) over w7 as txn_count_7d,
        sum(amount_sum) over w7 as amount_sum_7d,
        sum(txn_count) over w30 as txn_count_30d,
        sum(amount_sum) over w30 as amount_sum_30d,
        max(amount_max) over w30 as amount_max_30d,
        sum(online_count) over w30 as online_count_30d
    from daily
    window
        w7 as (partition by customer_id order by {{ day_number('activity_date') }} range between 6 preceding and current row),
        w30 as (partition by customer_id order by {{ day_number('activity_date') }} range between 29 preceding and current row)
)

select
    customer_id,
    {{ day_end('activity_date') }} as event_timestamp,
    {{ month_start('activity_date') }} as event_month,
    cast(txn_count as bigint) as txn_count_1d,
    amount_sum as amount_sum_1d,
    cast(txn_count_7d as bigint) as txn_count_7d,
    amount_sum_7d,
    amount_sum_7d / txn_count_7d as amount_avg_7d,
    cast(txn_count_30d as bigint) as txn_count_30d,
    amount_sum_30d,
    amount_max_30d,
    cast(online_count_30d as double) / txn_count_30d as online_share_30d
from windowed
