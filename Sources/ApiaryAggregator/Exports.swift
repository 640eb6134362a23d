// The merge path's public types (MergeStats, PublishedModel, NormPolicy, FedAvgConfig,
// RelayProgress) are part of the aggregator's API: a user of ApiaryAggregator sees them
// without importing ApiaryMerge.
@_exported import ApiaryMerge
