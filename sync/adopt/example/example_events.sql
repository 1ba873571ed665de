{#- feature-store example, added by `python -m sync init`: delete this folder and the
    example_user entity in dbt_project.yml once you have feature views of your own.
    Raw events, inline so the example builds anywhere; your own come from a dbt source
    (docs/adopting.md, "Bring your own raw data"). -#}
select
    cast(example_user_id as bigint) as example_user_id,
    event_at,
    cast(amount as double) as amount
from (values
    (1, timestamp '2024-01-01 09:00:00', 12.50),
    (1, timestamp '2024-01-01 17:30:00', 40.00),
    (1, timestamp '2024-01-03 08:10:00', 5.00),
    (2, timestamp '2024-01-01 11:15:00', 7.25),
    (2, timestamp '2024-01-02 19:00:00', 99.99),
    (3, timestamp '2024-01-02 21:45:00', 15.00)
) as events (example_user_id, event_at, amount)
