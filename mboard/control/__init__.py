"""The control plane: membership, epochs, leases and the public ControlPlane service."""
