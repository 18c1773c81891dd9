"""Migration of a service from Docker Compose to K3s: conversion, data move, rollback and resume (runbook 05)."""
