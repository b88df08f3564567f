"""Writers: one partitioned writer (`dataset`) over file formats (`formats`) and path layouts (`layout`), its
commit protocol (`commit`, `manifest`, `lock`), and SageMaker's merged records (`merged_jsonl`)."""
