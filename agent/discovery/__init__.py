"""mDNS (zeroconf) advertisement on agents (advertise) and browsing on controllers (browse); which interfaces they
use (interfaces).

Nothing is imported here: `discovery.interfaces` (flag parsing, on every start) must not pull in zeroconf, which an
agent that does not advertise and a controller that does not browse never need."""
