"""What each profiler metric means, as plain data: stored name, unit, better direction, help.

A profiler returns ``name -> (value, unit)`` and the runner stores it as ``<profiler>.<name>``;
this table is where the profilers say what those readings mean. It is plain data because the
profilers never import suite: effbench.suite.metrics declares every entry (kind ``timing``: a
profiler reading is a measurement of one profiled pass) and the runner takes each record's
direction from it. ``<...>`` in a name stands for a part chosen at run time (an energy window
path, a roofline point, a GPU, a CPU zone). docs/METRICS.md, "Profiler metrics", defines each
one; tests/unit/test_metrics.py checks that the profilers report exactly these units.
"""

from __future__ import annotations

from typing import NamedTuple


class ProfilerMetric(NamedTuple):
    """One profiler metric: ``<profiler>.<metric>`` as stored, its unit, which way is better."""

    name: str
    unit: str
    direction: str
    help: str


_M = ProfilerMetric

TKLQT = (  # profilers/tklqt_profiler.py (per trace) and profilers/tklqt_sweep.py (per step)
    _M("tklqt.n_kernels", "count", "lower", "direct (non-graph) kernel launches"),
    _M("tklqt.tklqt_us", "us", "lower", "TKLQT: sum of t_lq over direct launches"),
    _M("tklqt.t_lq_median_us", "us", "lower", "median launch+queue time of a kernel"),
    _M("tklqt.t_lq_p90_us", "us", "lower", "90th percentile launch+queue time"),
    _M("tklqt.launch_delay_sum_us", "us", "lower", "sum of launch delays (unclipped)"),
    _M("tklqt.n_short_kernels", "count", "lower", "kernels shorter than their launch call"),
    _M("tklqt.kernel_time_us", "us", "lower", "sum of kernel durations"),
    _M("tklqt.gpu_busy_us", "us", "lower", "union of kernel intervals per device"),
    _M("tklqt.gpu_idle_us", "us", "lower", "span minus busy time"),
    _M("tklqt.gpu_idle_fraction", "fraction", "lower", "(span - busy) / span"),
    _M("tklqt.n_graph_launches", "count", "lower", "distinct CUDA graph launches"),
    _M("tklqt.n_graph_kernels", "count", "lower", "kernels run from CUDA graphs"),
    _M("tklqt.tklqt_us_per_step", "us", "lower", "TKLQT per engine step (profile tklqt)"),
    _M("tklqt.kernels_per_step", "count", "lower", "kernels per engine step (profile tklqt)"),
    _M("tklqt.step_ms", "ms", "lower",
       "median engine step latency, timed without the profiler (profile tklqt)"),
    _M("tklqt.transition_batch", "count", "higher",
       "batch size where decode turns GPU-bound (profile tklqt; detect_transition)"),
    _M("tklqt.latency_transition_batch", "count", "higher",
       "batch size where decode step latency leaves its floor (profile tklqt)"),
)

ENERGY = (  # profilers/energy.py, window_metrics
    _M("energy.idle.s", "s", "lower", "length of the idle-power baseline"),
    _M("energy.idle.gpu_W", "W", "lower", "idle GPU power, all measured GPUs"),
    _M("energy.idle.gpu<N>_W", "W", "lower", "idle power of GPU cuda:N (several GPUs)"),
    _M("energy.idle.cpu.<zone>_W", "W", "lower", "idle power of a RAPL zone"),
    _M("energy.<path>.s", "s", "lower", "seconds inside the window(s) of a path"),
    _M("energy.<path>.windows", "count", "lower", "windows of that path (summed)"),
    _M("energy.<path>.short_windows", "count", "lower",
       "windows shorter than the counter's update period"),
    _M("energy.<path>.gpu_J", "J", "lower", "GPU energy, all measured GPUs"),
    _M("energy.<path>.gpu_W", "W", "lower", "mean GPU power: gpu_J / s"),
    _M("energy.<path>.gpu_net_J", "J", "lower", "GPU energy minus idle power x duration"),
    _M("energy.<path>.gpu<N>_J", "J", "lower", "energy of GPU cuda:N (several GPUs)"),
    _M("energy.<path>.gpu<N>_net_J", "J", "lower", "net energy of GPU cuda:N (several GPUs)"),
    _M("energy.<path>.cpu.<zone>_J", "J", "lower", "energy of a RAPL zone"),
    _M("energy.<path>.cpu.<zone>_net_J", "J", "lower", "energy of a RAPL zone minus idle"),
)

BANDWIDTH = (  # profilers/bandwidth.py, BandwidthProfiler.stop
    _M("bandwidth.peak_bw", "GB/s", "higher", "the device's peak memory bandwidth"),
    _M("bandwidth.peak_compute", "TFLOP/s", "higher", "the device's peak compute"),
    _M("bandwidth.memory_busy_mean", "%", "lower", "mean NVML memory-busy duty cycle"),
    _M("bandwidth.memory_busy_max", "%", "lower", "largest NVML memory-busy duty cycle"),
    _M("bandwidth.<name>.achieved_bw", "GB/s", "higher", "bytes / seconds of a recorded piece"),
    _M("bandwidth.<name>.achieved_compute", "TFLOP/s", "higher",
       "FLOPs / seconds of a recorded piece"),
    _M("bandwidth.<name>.intensity", "FLOP/B", "higher", "arithmetic intensity: FLOPs / bytes"),
    _M("bandwidth.<name>.pct_peak_bw", "%", "higher", "achieved / peak bandwidth"),
    _M("bandwidth.<name>.pct_peak_compute", "%", "higher", "achieved / peak compute"),
    _M("bandwidth.<name>.memory_bound", "flag", "lower", "1 when below the ridge point"),
)

HOST = (  # profilers/host.py, HostProfiler.stop
    _M("host.samples", "count", "lower", "py-spy samples taken"),
    _M("host.top1_share", "fraction", "lower", "share of samples in the hottest frame"),
    _M("host.python_share", "fraction", "lower", "share of samples whose leaf is Python"),
    _M("host.native_share", "fraction", "higher", "share of samples whose leaf is native"),
    _M("host.native_frames", "flag", "lower", "1 when py-spy recorded native frames"),
)

MEMORY = (  # profilers/memory.py, MemoryProfiler.stop
    _M("memory.peak_allocated", "B", "lower", "CUDA peak allocated in the region"),
    _M("memory.peak_rss_process", "B", "lower", "the process's peak RSS so far (CPU)"),
)

INTERFERENCE = (  # profilers/interference.py, over every case's timed pass (suite/runner.py)
    _M("interference.wall_s", "s", "lower", "length of the observed timed pass"),
    _M("interference.load_start", "tasks", "lower", "1-minute load average at its start"),
    _M("interference.load_end", "tasks", "lower", "1-minute load average at its end"),
    _M("interference.other_cpu_s", "s", "lower",
       "CPU time other processes used on this process's CPUs (/proc/stat minus own)"),
    _M("interference.steal_s", "s", "lower", "steal time of those CPUs (hypervisor)"),
    _M("interference.other_cpu_share", "fraction", "lower",
       "(other + steal) CPU time / (usable cores x wall time): the noisy rule's input"),
    _M("interference.cpu_mhz_min", "MHz", "higher", "lowest CPU frequency read (cpufreq)"),
    _M("interference.cpu_mhz_max", "MHz", "higher", "highest CPU frequency read (cpufreq)"),
    _M("interference.gpu_other_util", "%", "lower", "GPU SM use by other processes (NVML)"),
    _M("interference.noisy", "flag", "lower", "1 when the case was measured under interference"),
    _M("interference.attempts", "count", "lower", "timed passes run (--retry-noisy)"),
)

PROFILER_METRICS: tuple[ProfilerMetric, ...] = (TKLQT + ENERGY + BANDWIDTH + HOST + MEMORY
                                                + INTERFERENCE)
"""Every built-in profiler metric, in the order reports list them."""
