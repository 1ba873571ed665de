{#- feature-store example (python -m sync init): a training set. Every label gets the features
    as they were known at label_at, never later (docs/point-in-time.md). -#}
select *
from (
    {{ feature_store.point_in_time_join(
        spine=ref('example_labels'),
        features=['example_user_spend:purchases_1d', 'example_user_spend:amount_1d'],
        timestamp='label_at',
    ) }}
) as training_set
