// The agent's release; bumped with the package version.
export const AGENT_VERSION = "0.1.0";
