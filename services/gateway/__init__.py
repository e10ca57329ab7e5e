"""Gateway: owns the operators and their keys, its read models fed from topics (lookup, exclusion and
verification views, command effects, decisions by operator) and uploaded documents; the HTTP face of
Selfex for operators, people and compliance staff."""
