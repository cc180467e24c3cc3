"""Flower app: the breast-cancer federation with fedvault's DP-SGD and SecAgg(+)."""
