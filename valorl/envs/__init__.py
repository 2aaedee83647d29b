"""Environments: rolling policies out in host-stepped Gymnasium environments (`rollouts`)."""
