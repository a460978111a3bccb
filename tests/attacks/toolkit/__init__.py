"""The attacker's toolkit: a repository simulator, a malicious HTTPS server, device tampering."""
