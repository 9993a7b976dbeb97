"""Install and run onair's local Kafka and S3 servers; the commands are in cli.py."""
