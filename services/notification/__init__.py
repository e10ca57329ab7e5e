"""The notification service: codes, letters and reminders by e-mail and SMS, each delivered once."""
