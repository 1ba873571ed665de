{{ feature_store.point_in_time_join(spine=ref('spine'), features=['v_created_built:x', 'v_created_built:s', 'v_pair_ttl:y']) }}
