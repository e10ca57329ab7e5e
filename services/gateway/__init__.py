"""Gateway: the HTTP face of Selfex for operators, people and compliance staff."""
