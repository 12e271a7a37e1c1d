// Task events to containerd, as runtime v2 shims send them: an Envelope
// (timestamp, namespace, topic, the event as an Any whose type URL is the
// message's full name, as containerd's typeurl writes it) forwarded over
// ttrpc to containerd's Events service at $TTRPC_ADDRESS. Events go out in
// order, one at a time; a lost connection is redialled, and an event that
// still cannot be delivered after a few tries is logged and dropped rather
// than holding every later one back.
import { containerd, google } from "./gen/containerd.js";
import { TtrpcClient } from "./ttrpc.js";

const ev = containerd.events;

/** Every event a shim publishes: its topic, and the message that goes in the envelope. */
export type TaskEvent =
  | { topic: "/tasks/create"; event: containerd.events.ITaskCreate }
  | { topic: "/tasks/start"; event: containerd.events.ITaskStart }
  | { topic: "/tasks/exit"; event: containerd.events.ITaskExit }
  | { topic: "/tasks/delete"; event: containerd.events.ITaskDelete }
  | { topic: "/tasks/exec-added"; event: containerd.events.ITaskExecAdded }
  | { topic: "/tasks/exec-started"; event: containerd.events.ITaskExecStarted }
  | { topic: "/tasks/oom"; event: containerd.events.ITaskOOM };

/** The event as an Any: containerd's typeurl names protobuf messages by their full name. */
export function eventAny(e: TaskEvent): google.protobuf.IAny {
  const [name, bytes] = ((): [string, Uint8Array] => {
    switch (e.topic) {
      case "/tasks/create":
        return ["TaskCreate", ev.TaskCreate.encode(e.event).finish()];
      case "/tasks/start":
        return ["TaskStart", ev.TaskStart.encode(e.event).finish()];
      case "/tasks/exit":
        return ["TaskExit", ev.TaskExit.encode(e.event).finish()];
      case "/tasks/delete":
        return ["TaskDelete", ev.TaskDelete.encode(e.event).finish()];
      case "/tasks/exec-added":
        return ["TaskExecAdded", ev.TaskExecAdded.encode(e.event).finish()];
      case "/tasks/exec-started":
        return ["TaskExecStarted", ev.TaskExecStarted.encode(e.event).finish()];
      case "/tasks/oom":
        return ["TaskOOM", ev.TaskOOM.encode(e.event).finish()];
    }
  })();
  return { type_url: `containerd.events.${name}`, value: bytes };
}

export function timestamp(ms: number): google.protobuf.ITimestamp {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

export class Publisher {
  private client?: TtrpcClient;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly address: string,
    private readonly namespace: string,
    private readonly log: (msg: string) => void,
  ) {}

  publish(e: TaskEvent): Promise<void> {
    const req = containerd.services.events.ttrpc.v1.ForwardRequest.encode({
      envelope: { timestamp: timestamp(Date.now()), namespace: this.namespace, topic: e.topic, event: eventAny(e) },
    }).finish();
    this.queue = this.queue.then(() => this.send(e.topic, req));
    return this.queue;
  }

  private async send(topic: string, req: Uint8Array): Promise<void> {
    if (!this.address) return;
    for (let attempt = 1; attempt <= 5; attempt++) {
      try {
        this.client ??= await TtrpcClient.connect(this.address);
        await this.client.call("containerd.services.events.ttrpc.v1.Events", "Forward", req);
        return;
      } catch (err) {
        this.client?.close();
        this.client = undefined;
        if (attempt === 5) this.log(`event ${topic} not delivered to ${this.address}: ${(err as Error).message}`);
        else await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  }

  close(): void {
    this.client?.close();
  }
}
