"""hie-seg: 3D U-Net segmentation of HIE lesions in neonatal ADC / Z_ADC MRI."""

__version__ = "0.1.0"
