"""The recovery layer (L3) of the worker fleet: checkpoints of the derived state, hot view rebuilds."""
