select
    merchant_id,
    computed_at,
    embedding,
    model_version
from {{ source('raw', 'merchant_embeddings') }}
