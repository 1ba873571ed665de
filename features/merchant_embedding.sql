{#- Monthly merchant embeddings (64 x float32), for similarity lookups and as model input. -#}
select
    merchant_id,
    computed_at,
    embedding,
    model_version
from {{ ref('stg_merchant_embeddings') }}
