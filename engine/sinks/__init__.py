"""Writers: the hive-partitioned dataset and its commit protocol (`dataset`), and SageMaker's merged JSON Lines
layout (`merged_jsonl`)."""
