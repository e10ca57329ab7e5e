"""The forwarder: every exclusion made here reaches the register, and the register's reach here."""
