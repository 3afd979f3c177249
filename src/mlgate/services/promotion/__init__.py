"""The gates: promotion requests opened, decided and expired, and the worker that copies approved versions."""
