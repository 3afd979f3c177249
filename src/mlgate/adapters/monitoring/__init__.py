"""The monitoring store's Parquet files read back for the control plane, and ground truth written into them."""
