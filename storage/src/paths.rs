//! The one mapping from what is stored to where (STYLE habit 2).
