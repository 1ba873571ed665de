{{ feature_store.point_in_time_join(spine=ref('spine'), features=['v_created:*', 'v_pair:y'], full_feature_names=true) }}
