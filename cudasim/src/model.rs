//! The simulated GPU: its limits (what a launch the real driver would refuse looks like) and
//! the figures of the timing cost model.
//!
//! Two models: a T4 (sm_75, the default: the GPU vitcore's users have in the field) and an
//! H100-like sm_90. Environment:
//! * `CUDASIM_DEVICE=t4|h100` picks the model;
//! * `CUDASIM_SM_COUNT=N` overrides the SM count (2 makes vitcore's grid-stride loops, whose
//!   grids are sized from the SM count, run several laps at small sizes);
//! * `CUDASIM_MAX_GRID_YZ=N` lowers the grid's y and z limit from 65535 (a small limit makes a
//!   program's host-side splitting of large grids run at small sizes; a launch beyond it is
//!   refused as the real driver refuses one beyond 65535);
//! * `CUDASIM_MEMORY_MIB=N` overrides the memory size.
//!
//! Figures are NVIDIA's published specifications (T4 and H100 datasheets, the CUDA C++
//! Programming Guide's "Technical Specifications per Compute Capability" table).

/// A device model.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceModel {
    /// Short name of the GPU it imitates.
    pub gpu: &'static str,
    pub compute_capability: (u32, u32),
    pub sm_count: u32,
    pub max_threads_per_block: u32,
    pub max_block_dim: [u32; 3],
    pub max_grid_dim: [u32; 3],
    /// Static shared memory a block may declare (bytes).
    pub max_static_shared_per_block: u32,
    /// Static + dynamic shared memory a block may use after opting in (bytes).
    pub max_shared_per_block_optin: u32,
    pub shared_per_sm: u32,
    pub regs_per_block: u32,
    pub regs_per_sm: u32,
    pub max_threads_per_sm: u32,
    pub max_blocks_per_sm: u32,
    pub warp_size: u32,
    pub total_mem: u64,
    /// SM clock, kHz (boost).
    pub clock_khz: u32,
    pub mem_clock_khz: u32,
    pub mem_bus_bits: u32,
    /// DRAM bandwidth, GB/s.
    pub dram_gbs: f64,
    pub l2_bytes: u32,
    /// Host↔device copy bandwidth, GB/s (PCIe).
    pub pcie_gbs: f64,
}

impl DeviceModel {
    /// NVIDIA T4: Turing TU104, 40 SMs, 16 GB GDDR6 (15 GiB usable), 320 GB/s, 1590 MHz boost.
    pub fn t4() -> DeviceModel {
        DeviceModel {
            gpu: "Tesla T4",
            compute_capability: (7, 5),
            sm_count: 40,
            max_threads_per_block: 1024,
            max_block_dim: [1024, 1024, 64],
            max_grid_dim: [i32::MAX as u32, 65535, 65535],
            max_static_shared_per_block: 48 * 1024,
            max_shared_per_block_optin: 64 * 1024,
            shared_per_sm: 64 * 1024,
            regs_per_block: 65536,
            regs_per_sm: 65536,
            max_threads_per_sm: 1024,
            max_blocks_per_sm: 16,
            warp_size: 32,
            total_mem: 15 * 1024 * 1024 * 1024,
            clock_khz: 1_590_000,
            mem_clock_khz: 5_001_000,
            mem_bus_bits: 256,
            dram_gbs: 320.0,
            l2_bytes: 4 * 1024 * 1024,
            pcie_gbs: 12.0,
        }
    }

    /// An H100-like sm_90 (H100 SXM5: 132 SMs, 80 GB HBM3, 3.35 TB/s, 1980 MHz boost).
    pub fn h100() -> DeviceModel {
        DeviceModel {
            gpu: "H100",
            compute_capability: (9, 0),
            sm_count: 132,
            max_threads_per_block: 1024,
            max_block_dim: [1024, 1024, 64],
            max_grid_dim: [i32::MAX as u32, 65535, 65535],
            max_static_shared_per_block: 48 * 1024,
            max_shared_per_block_optin: 227 * 1024,
            shared_per_sm: 228 * 1024,
            regs_per_block: 65536,
            regs_per_sm: 65536,
            max_threads_per_sm: 2048,
            max_blocks_per_sm: 32,
            warp_size: 32,
            total_mem: 80 * 1024 * 1024 * 1024,
            clock_khz: 1_980_000,
            mem_clock_khz: 2_619_000,
            mem_bus_bits: 5120,
            dram_gbs: 3350.0,
            l2_bytes: 50 * 1024 * 1024,
            pcie_gbs: 25.0,
        }
    }

    /// The model the environment asks for (see the module doc); an invalid setting is an error.
    pub fn from_env() -> Result<DeviceModel, String> {
        let mut m = match std::env::var("CUDASIM_DEVICE")
            .ok()
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("t4") | Some("sm_75") => DeviceModel::t4(),
            Some("h100") | Some("sm_90") => DeviceModel::h100(),
            Some(other) => return Err(format!("CUDASIM_DEVICE={other}: expected t4 or h100")),
        };
        if let Ok(v) = std::env::var("CUDASIM_SM_COUNT") {
            m.sm_count = v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &u32| (1..=1024).contains(&n))
                .ok_or_else(|| format!("CUDASIM_SM_COUNT={v}: expected a number from 1 to 1024"))?;
        }
        if let Ok(v) = std::env::var("CUDASIM_MAX_GRID_YZ") {
            let n: u32 = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=65535).contains(n))
                .ok_or_else(|| format!("CUDASIM_MAX_GRID_YZ={v}: expected a number from 1 to 65535"))?;
            m.max_grid_dim[1] = n;
            m.max_grid_dim[2] = n;
        }
        if let Ok(v) = std::env::var("CUDASIM_MEMORY_MIB") {
            let mib: u64 = v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &u64| n >= 1)
                .ok_or_else(|| format!("CUDASIM_MEMORY_MIB={v}: expected a positive number"))?;
            m.total_mem = mib << 20;
        }
        Ok(m)
    }

    /// The device name the driver reports. It says "simulator", so that vitcore's one-line
    /// device announcement (and any tool printing the name) makes clear no GPU ran the work.
    pub fn name(&self) -> String {
        let (a, b) = self.compute_capability;
        format!(
            "cudasim simulator ({} model, sm_{a}{b}, {} SMs)",
            self.gpu, self.sm_count
        )
    }

    /// Modelled duration of a kernel launch, in microseconds (the events' "elapsed time").
    ///
    /// `launch overhead + max(issue time, DRAM time)`: issue time is the warp instructions
    /// spread over every SM's four warp schedulers at one instruction per clock each; DRAM time
    /// is the global bytes the kernel moved at the datasheet bandwidth. A roofline with perfect
    /// overlap and no caches — an order-of-magnitude figure, never a measurement.
    pub fn launch_micros(&self, warp_instructions: u64, global_bytes: u64) -> f64 {
        const LAUNCH_OVERHEAD_US: f64 = 4.0;
        let issue_per_us = self.sm_count as f64 * 4.0 * self.clock_khz as f64 / 1000.0;
        let issue = warp_instructions as f64 / issue_per_us;
        let dram = global_bytes as f64 / (self.dram_gbs * 1000.0);
        LAUNCH_OVERHEAD_US + issue.max(dram)
    }

    /// Modelled duration of a host↔device copy, µs: 8 µs latency plus the bytes at PCIe speed.
    pub fn copy_micros(&self, bytes: u64) -> f64 {
        8.0 + bytes as f64 / (self.pcie_gbs * 1000.0)
    }

    /// Modelled duration of a device-side copy or memset, µs (read + write at DRAM speed).
    pub fn device_copy_micros(&self, bytes: u64) -> f64 {
        2.0 + 2.0 * bytes as f64 / (self.dram_gbs * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_simulator() {
        assert!(DeviceModel::t4().name().contains("simulator"));
        assert!(DeviceModel::h100().name().contains("sm_90"));
    }

    #[test]
    fn cost_model_is_a_roofline() {
        let t4 = DeviceModel::t4();
        // 320 GB/s: 320 MB take 1000 us plus the overhead.
        assert!((t4.launch_micros(0, 320_000_000) - 1004.0).abs() < 1e-6);
        assert!(t4.launch_micros(1 << 30, 0) > t4.launch_micros(1 << 20, 0));
    }
}
