// Whether the guest's links are configured yet. The host's `boot` asks (in
// VersionResponse) before its first TCP connection: one made while the guest
// has no address is lost in the user-mode network, and passt then spins on
// the host's half-closed socket until its handshake times out (seconds of a
// host CPU during boot). An agent that configures no network is always ready.
let ready = true;

export function networkPending(): void {
  ready = false;
}

export function networkDone(): void {
  ready = true;
}

export function networkReady(): boolean {
  return ready;
}
