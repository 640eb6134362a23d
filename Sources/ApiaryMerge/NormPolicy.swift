/// What the aggregator does with an update whose norm (of `update - model`) is over the bound.
public enum NormPolicy: String, Sendable, Hashable {
    /// Reject it (reason norm_too_large).
    case reject
    /// Merge it scaled down to the bound: the mixing weight is multiplied by bound / norm.
    case clip
}
