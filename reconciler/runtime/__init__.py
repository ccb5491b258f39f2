"""The long-running commands: one control loop with triggers (file, docker, git, webhook)."""
