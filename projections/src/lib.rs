//! Read models built from the gap-free event feed (the projections issue).
