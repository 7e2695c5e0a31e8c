// `sluice demo`: three in-process demo backends that say who they are, and the gateway in front
// of them, so a newcomer sees round robin at work with curl in the first minute; plus an MQTT
// listener, a WebSocket bridge and an XML view of the same backends, to show translation.
#pragma once

namespace sluice::demo {

// Runs until SIGINT/SIGTERM; returns the exit code. `mqtt_port` 0 = no MQTT listener.
int run_demo(int port, int workers, int mqtt_port);

}  // namespace sluice::demo
