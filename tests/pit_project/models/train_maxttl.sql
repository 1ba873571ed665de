{{ feature_store.point_in_time_join(spine=ref('spine'), features=['v_created_maxttl:x', 'v_created_maxttl:s', 'v_pair:y']) }}
