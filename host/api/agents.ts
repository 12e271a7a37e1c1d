// One open connection per VM's agent, shared by every API request (as the
// CLI's library would keep one), made on first use and again after it drops.
import { AgentClient } from "../client.js";
import { requireVm, vmEndpoint } from "../vm/manager.js";

export class AgentPool {
  private readonly clients = new Map<string, Promise<AgentClient>>();

  constructor(private readonly keyFile?: string) {}

  get(vm: string): Promise<AgentClient> {
    const have = this.clients.get(vm);
    if (have) {
      return have.then(
        (c) => (c.session.closed ? this.dial(vm) : c),
        () => this.dial(vm),
      );
    }
    return this.dial(vm);
  }

  private dial(vm: string): Promise<AgentClient> {
    const p = (async () => AgentClient.connect(vmEndpoint(requireVm(vm)), { keyFile: this.keyFile }))();
    this.clients.set(vm, p);
    p.catch(() => this.clients.delete(vm));
    return p;
  }

  /** Forgets a VM's connection (it was stopped). */
  drop(vm: string): void {
    const p = this.clients.get(vm);
    this.clients.delete(vm);
    void p?.then((c) => c.close(), () => {});
  }

  closeAll(): void {
    for (const vm of [...this.clients.keys()]) this.drop(vm);
  }
}
