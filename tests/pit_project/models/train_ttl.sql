{{ feature_store.point_in_time_join(spine=ref('spine'), features=['v_created_ttl:x', 'v_created_ttl:s', 'v_pair_ttl:y']) }}
