"""mDNS (zeroconf) advertisement on agents and browsing on controllers."""

from tensorfleet_agent.discovery.advertise import AdvertisedAgent, Advertiser
from tensorfleet_agent.discovery.browse import AgentBrowser, DiscoveredAgent
from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE, mdns_interfaces

__all__ = [
    "SERVICE_TYPE",
    "AdvertisedAgent",
    "Advertiser",
    "AgentBrowser",
    "DiscoveredAgent",
    "mdns_interfaces",
]
