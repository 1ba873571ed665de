-- depends_on: {{ ref('v_created_ttl') }}
-- depends_on: {{ ref('v_pair_ttl') }}
{{ feature_store.point_in_time_join(spine=ref('spine'), feature_service='svc') }}
