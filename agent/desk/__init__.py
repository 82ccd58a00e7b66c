"""Desk mode (`tensorfleet-agent --desk`): a workstation lends itself to the cluster only while its owner is away.

One module per owner-activity signal behind one interface (signals.py), a monitor that polls them and hands the
machine back (monitor.py), the lending hours (schedule.py), and the owner's local control socket (control.py)."""
