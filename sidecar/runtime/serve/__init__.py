"""The facades every face calls: decisions (evaluate, consume), every admin operation,
usage history and export, the impact of a catalog change."""
