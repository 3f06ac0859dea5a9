//! Text form of the IR: a deterministic printer and a parser (`parse(print(g)) == g`).
