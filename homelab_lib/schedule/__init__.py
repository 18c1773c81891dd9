"""Scheduled runs and their alerts: systemd timers, the K3s CronJob, Alertmanager alerts."""
