"""The fused recommender: CF + tabular + image blocks in one FAISS index."""
