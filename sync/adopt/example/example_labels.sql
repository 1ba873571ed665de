{#- feature-store example (python -m sync init): the training spine, one row per label with
    the moment it was observed. -#}
select cast(example_user_id as bigint) as example_user_id, label_at, converted
from (values
    (1, timestamp '2024-01-02 12:00:00', true),
    (1, timestamp '2024-01-04 12:00:00', false),
    (2, timestamp '2024-01-01 12:00:00', false),
    (2, timestamp '2024-01-03 12:00:00', true),
    (3, timestamp '2024-01-02 12:00:00', false)
) as labels (example_user_id, label_at, converted)
