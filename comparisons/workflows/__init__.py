"""What a user runs: studies (local and on Ray), campaigns, blind serving, the Lab facade and the report."""
